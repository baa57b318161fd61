"""Operations: metrics and collectors, logs, read models, dead letters, Flower auth."""
