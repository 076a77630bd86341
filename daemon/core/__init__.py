"""The per-op core: sessions, region leases, request binding, one handler per op. No sockets,
no threads of its own: the socket loop (serve/) or a test drives it in-process."""
