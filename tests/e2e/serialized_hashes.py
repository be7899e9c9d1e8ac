"""Print ``{dag_id: serialized DAG hash}`` for every DAG in a folder, as the DAG processor computes it.

Run by tests/e2e/test_serialization_airflow3.py in the patched test environment and in a fresh,
unpatched one: the two outputs must be equal for DAGs that do not use the flags.
"""

import json
import sys

from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization, LazyDeserializedDAG

folder = sys.argv[1]
sys.path.insert(0, folder)
bag = DagBag(dag_folder=folder)
if bag.import_errors:
    raise SystemExit(f"import errors: {bag.import_errors}")
hashes = {}
for dag_id, dag in sorted(bag.dags.items()):
    data = DagSerialization.to_dict(dag)
    DagSerialization.validate_schema(data)
    hashes[dag_id] = LazyDeserializedDAG(data=data).hash
print(json.dumps(hashes, sort_keys=True))
