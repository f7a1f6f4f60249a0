{ } ? a || true
