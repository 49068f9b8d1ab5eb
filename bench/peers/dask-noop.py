# Peer of row 10b: Dask distributed on N no-op function calls. `dask-noop.py N WORKERS` starts a
# LocalCluster of WORKERS worker processes (1 thread each, no dashboard), maps a no-op function
# over range(N) and waits for every result. It prints {"startMs","execMs","done"} as JSON: the
# cluster's start, then from the first submit to the last result back at the client. Nothing is
# written to disk: a result lives in a worker's memory only (Dask keeps no completion durable).
import json
import sys
import time

from dask.distributed import Client, LocalCluster, wait


def noop(x):
    return None


def main():
    n = int(sys.argv[1])
    workers = int(sys.argv[2])
    t0 = time.perf_counter()
    cluster = LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = Client(cluster)
    client.wait_for_workers(workers)
    t1 = time.perf_counter()
    futures = client.map(noop, range(n), pure=False)
    wait(futures)
    done = sum(1 for f in futures if f.status == "finished")
    t2 = time.perf_counter()
    client.close()
    cluster.close()
    print(json.dumps({"startMs": (t1 - t0) * 1000, "execMs": (t2 - t1) * 1000, "done": done}))


if __name__ == "__main__":
    main()
