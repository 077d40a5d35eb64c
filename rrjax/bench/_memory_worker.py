"""``python -m rrjax.bench._memory_worker '<json spec>'``: one memory measurement in a fresh
process (see :mod:`rrjax.bench.memory`); prints one ``MEMORY {json}`` line."""

import json
import sys

from rrjax.bench.memory import RESULT_PREFIX, memory_worker

if __name__ == "__main__":
    print(RESULT_PREFIX + json.dumps(memory_worker(json.loads(sys.argv[1]))), flush=True)
