"""gunicorn config hooks that profile each worker with cProfile (`python -m bench.run --profile`).

    gunicorn -c bench/gunicorn_profile.py wsgi:app

Each worker writes `<BENCH_PROFILE_DIR>/worker-<pid>.prof` when it exits; the
benchmark merges them and prints the top functions by cumulative and own time.
Profiling slows the app down, so profiled runs are never put in the table.
"""
import cProfile
import os

_profiler = None


def post_worker_init(worker):
    global _profiler
    _profiler = cProfile.Profile()
    _profiler.enable()


def worker_exit(server, worker):
    if _profiler is None:
        return
    _profiler.disable()
    directory = os.environ.get("BENCH_PROFILE_DIR", "/tmp")
    _profiler.dump_stats(os.path.join(directory, f"worker-{os.getpid()}.prof"))
