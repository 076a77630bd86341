"""The socket and the process around the core: ROUTER loop, access tokens, the endpoint lock,
service-manager notifications, the bounded stop, logging."""
