"""Child process for the crash test: durable writes from 8 threads, one line per ack.

Usage: python crash_writer.py DIR N. Each thread writes keys w/<i> for its share
of 0..N-1 and prints ``i`` after the write returned (after its commit).
"""

from __future__ import annotations

import sys
import threading

from sync.adapters.embedded import open_replica


def main(directory: str, total: int, threads: int = 8) -> None:
    replica = open_replica(directory, "crash-node")
    out_lock = threading.Lock()

    def writer(k: int) -> None:
        for i in range(k, total, threads):
            replica.register(f"w/{i:05d}").set(i)
            replica.counter("acked").increment()
            with out_lock:
                sys.stdout.write(f"{i}\n")
                sys.stdout.flush()

    workers = [threading.Thread(target=writer, args=(k,)) for k in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    replica.close()
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
