"""rafttool: dense optical flow with RAFT."""
