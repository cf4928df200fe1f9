"""Forecasts of load, solar and price: pure functions over plain arrays, no I/O.

``series`` is the regular time series every model takes; ``clean`` turns raw
readings into one (counting and bounding what it fills); ``models`` holds the
seasonal-naive baselines, MSTL+AR, Holt-Winters and SARIMAX behind one
fit/forecast interface with Gaussian quantiles; ``backtest`` runs rolling-origin
backtests with no look-ahead and reports error by horizon bucket against the naive.
Readers of files, ClickHouse and Kafka live elsewhere and hand these modules arrays.
"""
