"""The memory store's first use does not import numpy (and the index's stemmer) on the event loop: ~0.3-0.4 s
of imports there would hold every other caller of the gateway. A fresh interpreter (this one has numpy
loaded already) records which thread imports them during a first write and a first search."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys, threading
    import msgspec
    from multihome.config.kms import KmsConfig
    from multihome.crypto import init_key_file, open_keyring
    from multihome.state.memory import MemoryStore, NewRecord, WordLlamaEmbedder
    from multihome.storage.engine import create_engine

    WATCHED = ("numpy", "Stemmer", "multihome.state.memory.numeric", "multihome.state.memory.index")
    assert not any(name in sys.modules for name in WATCHED), "imported before the store's first use"
    importers = {}

    class Spy:  # sees each watched module's first import and the thread that does it
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name in WATCHED and name not in importers:
                importers[name] = threading.current_thread().name
            return None

    sys.meta_path.insert(0, Spy)

    async def main(url, key_file):
        init_key_file(key_file)
        kms = msgspec.convert({"backend": "local", "local": {"key_file": key_file}}, KmsConfig)
        engine = create_engine(url)
        keyring = open_keyring(kms, engine)
        store = MemoryStore(engine, keyring, WordLlamaEmbedder)
        loop_thread = threading.current_thread().name
        await store.write("t1", "agent", "u1", [NewRecord("The user's dog is a beagle named Biscuit.", {})])
        hits = await store.search("t1", "agent", "u1", "what dog")
        await store.close()
        await keyring.close()
        await engine.dispose()
        print(json.dumps({"loop": loop_thread, "importers": importers, "hits": len(hits)}))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


def test_the_first_write_and_search_import_numpy_off_the_loop(sqlite_database, tmp_path):
    url = sqlite_database()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, url, str(tmp_path / "kms.key")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=Path(__file__).parent,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["hits"] == 1
    assert set(seen["importers"]) == {
        "numpy",
        "Stemmer",
        "multihome.state.memory.numeric",
        "multihome.state.memory.index",
    }
    on_loop = {name for name, thread in seen["importers"].items() if thread == seen["loop"]}
    assert on_loop == set(), f"imported on the event loop's thread: {sorted(on_loop)}"
