"""The shell: the ``fabric`` command and the HTTP client it (and the tests) use.

Everything here does I/O on the wall clock (sockets, files, the terminal); the pure
core in ``fabric`` never imports it, and it runs only outside the simulator.
"""
