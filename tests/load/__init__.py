"""Load tests: the real daemon under HTTP load (wrk), its checks still on schedule."""
