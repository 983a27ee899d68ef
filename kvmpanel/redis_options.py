"""How every Redis client of the panel connects."""


def redis_reconnects(asynchronous: bool) -> dict:
    """Connection options that ride out a Redis restart: a command on a connection Redis dropped is
    sent again on a new one (three tries, 0.1 s apart and growing), instead of failing the first
    request, push or websocket after every restart."""
    from redis import exceptions
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    retry = (AsyncRetry if asynchronous else Retry)(ExponentialBackoff(cap=1, base=0.1), 3)
    return {"retry": retry, "retry_on_error": [exceptions.ConnectionError, exceptions.TimeoutError, OSError]}
