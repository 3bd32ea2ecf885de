"""Run a command and print its wall time and peak RSS (its own or its largest worker's) as JSON.

The benchmark calls this small helper instead of forking the command itself: Linux carries a
process's peak RSS across exec, so a child forked straight from the (large) benchmark process
would report the benchmark's memory, not the command's. This helper is about 10 MB itself.

    python bench/measure.py CMD ARGS...   ->   {"seconds": 1.23, "peak_rss_mb": 45.6, "exit_code": 0}
"""

import json
import os
import sys
import time

start = time.perf_counter()
pid = os.fork()
if pid == 0:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.execvp(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"seconds": time.perf_counter() - start, "peak_rss_mb": usage.ru_maxrss / 1024,
                  "exit_code": os.waitstatus_to_exitcode(status)}))
