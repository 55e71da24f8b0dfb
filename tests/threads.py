"""A check run on one numba thread and on two (the count restored after), for the tests
of numbers that must not depend on the thread count."""

import numba


def on_one_and_two_threads(run) -> list:
    """``run()``'s result on 1 numba thread, then on 2 (1 where numba has only one)."""
    saved = numba.get_num_threads()
    try:
        results = []
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            results.append(run())
        return results
    finally:
        numba.set_num_threads(saved)
