"""Retry with exponential backoff for flaky calls."""

import functools
import random
import time


def with_retries(attempts: int = 3, base_delay: float = 0.5):
    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            for attempt in range(attempts):
                try:
                    return fn(*args, **kwargs)
                except ConnectionError:
                    if attempt == attempts - 1:
                        raise
                    time.sleep(base_delay * 2**attempt + random.uniform(0, base_delay))
        return wrapper
    return decorate
