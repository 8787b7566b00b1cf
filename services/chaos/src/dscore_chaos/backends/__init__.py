"""Where faults land: Kubernetes pods, local processes, the nodes' transports."""
