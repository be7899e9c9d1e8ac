"""Reading a message preview back, for the previews' tests: the fragments are parsed with the
standard library's HTML parser, as a browser would build them: which elements there are, the text
they show, the links and the highlighted mentions."""

from __future__ import annotations

from html.parser import HTMLParser

from airflow_ext.channels.base.preview import render_payload_html

MOBILE, OTHER_MOBILE = "13800000000", "13900000000"


HOSTILE = "<script>alert(1)</script> <img src=x onerror=alert(2)> **not bold** [x](javascript:alert(3))"


VOID = {"br", "hr", "img", "input", "meta", "link", "wbr"}


class Shown(HTMLParser):
    """What a fragment shows: its elements (tag, attributes, text inside), its visible text, the
    hrefs of its links and the texts of its highlighted mentions."""

    def __init__(self, fragment: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str], str]] = []
        self.text = ""
        self._open: list[list] = []
        self.feed(fragment)
        self.close()
        assert not self._open, f"unclosed elements: {[tag for tag, *_ in self._open]}"

    def handle_starttag(self, tag, attrs):
        attributes = {name: value or "" for name, value in attrs}
        if tag in VOID:
            self.elements.append((tag, attributes, ""))
        else:
            self._open.append([tag, attributes, ""])

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, {name: value or "" for name, value in attrs}, ""))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self._open and self._open[-1][0] == tag, f"</{tag}> closes {self._open[-1:]}"
        self.elements.append(tuple(self._open.pop()))

    def handle_data(self, data):
        self.text += data
        for element in self._open:
            element[2] += data

    def texts(self, tag: str) -> list[str]:
        """The texts of the ``tag`` elements, white space collapsed as a browser shows it."""
        return [" ".join(text.split()) for name, _, text in self.elements if name == tag]

    @property
    def tags(self) -> set[str]:
        return {tag for tag, _, _ in self.elements}

    @property
    def hrefs(self) -> list[str]:
        return [attributes["href"] for tag, attributes, _ in self.elements if "href" in attributes]

    @property
    def mentions(self) -> list[str]:
        return [
            text
            for _, attributes, text in self.elements
            if "dingbot-msg__mention" in attributes.get("class", "")
        ]

    @property
    def is_raw(self) -> bool:
        return any("dingbot-msg--raw" in attributes.get("class", "") for _, attributes, _ in self.elements)


def shown(channel: str, payload) -> Shown:
    return Shown(render_payload_html(channel, payload))


def dingtalk_markdown(text: str, title: str = "Airflow failed: d.t", at: dict | None = None) -> dict:
    return {"msgtype": "markdown", "markdown": {"title": title, "text": text}, "at": at or {}}


def dingtalk_text(content: str, at: dict | None = None) -> dict:
    return {"msgtype": "text", "text": {"content": content}, "at": at or {}}


def assert_safe(page: Shown) -> None:
    """Nothing in the fragment runs: no script or image element, no event handler, no link but http(s)."""
    assert not page.tags & {"script", "img", "iframe", "object", "style"}
    for _, attributes, _ in page.elements:
        assert not [name for name in attributes if name.startswith("on")], attributes
    assert all(href.startswith(("http://", "https://")) for href in page.hrefs), page.hrefs
