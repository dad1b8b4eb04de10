"""Small module-level tasks the block tests share (module level so Dask workers can import them)."""

from iterflow import task


@task
def add(x, y):
    return x + y


@task
def at_least(x, limit):
    return x >= limit


@task
def ident(x):
    return x
