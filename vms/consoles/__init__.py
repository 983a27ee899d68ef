"""Console access: one-time tokens, the VNC bridge (websockify) and its RFB security proxy."""
