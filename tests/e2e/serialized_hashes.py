"""Print ``{dag_id: serialized DAG hash}`` for every DAG in a folder (or file), as the DAG processor
computes it; with a second argument, also write ``{dag_id: serialized DAG}`` to that file as JSON.

Run by tests/e2e/test_serialization_airflow3.py in the patched test environment and in a fresh,
unpatched one: the two outputs must be equal for DAGs that do not use the flags. The dump is what
a DAG processor would have stored: DAGs serialized by unpatched Airflow, or under the parsing
process's own [dingbot] configuration.
"""

import json
import sys
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization, LazyDeserializedDAG

path = Path(sys.argv[1])
sys.path.insert(0, str(path if path.is_dir() else path.parent))
bag = DagBag(dag_folder=str(path))
if bag.import_errors:
    raise SystemExit(f"import errors: {bag.import_errors}")
hashes, serialized = {}, {}
for dag_id, dag in sorted(bag.dags.items()):
    data = DagSerialization.to_dict(dag)
    DagSerialization.validate_schema(data)
    hashes[dag_id] = LazyDeserializedDAG(data=data).hash
    serialized[dag_id] = data
if len(sys.argv) > 2:
    Path(sys.argv[2]).write_text(json.dumps(serialized, sort_keys=True))
print(json.dumps(hashes, sort_keys=True))
