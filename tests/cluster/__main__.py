"""`make cluster`: the test cluster (cluster.py) for a person, until Ctrl-C. Prints where to send calls."""

from __future__ import annotations

import signal
import tempfile
import threading
from pathlib import Path

from .cluster import ADMIN_KEY, BUDGET, BUDGET_KEY, CLIENT_KEY, RATE_LIMIT, Cluster


def main() -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with tempfile.TemporaryDirectory(prefix="multihome-cluster-") as tmp, Cluster(Path(tmp)) as cluster:
        print(
            f"""
multihome cluster: {len(cluster.replicas)} replicas behind HAProxy, one PostgreSQL, one Redis, an OpenAI simulator

  URL (HAProxy):   {cluster.url}/v1        e.g. OPENAI_BASE_URL={cluster.url}/v1 OPENAI_API_KEY={CLIENT_KEY}
  replicas:        {", ".join(r.url for r in cluster.replicas)}
  client key:      {CLIENT_KEY}      model groups: chat, limited ({RATE_LIMIT}/min), budgeted
  budgeted key:    {BUDGET_KEY}      (hard budget {BUDGET} USD per day)
  admin key:       {ADMIN_KEY}       ({cluster.url}/admin/v1/..., {cluster.url}/console)
  database:        {cluster.db_url}
  files and logs:  {tmp}

Reload a replica's config: edit {tmp}/r1.yaml, then kill -HUP {cluster.replicas[0].popen.pid}. Ctrl-C stops everything.
""",
            flush=True,
        )
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
