"""Sensors and local inference: streams in, anomalies out, conclusions replicated.

Sources (simulated machines, MQTT, file replay) cut their streams into windows
and fill bounded buffers; a worker thread computes features with numpy, scores
them with a small TFLite autoencoder per sensor kind, and writes what it
concludes (anomaly counters, peak levels, open alerts, summaries) into the
replicated state. Raw windows and features stay under ``local/``.

Modules: ``signals`` (simulated signals and faults), ``simulated``, ``mqtt``,
``payload``, ``replay`` (sources), ``windowing``, ``buffer``, ``features``,
``model``, ``calibration``, ``state`` (key layout and updates), ``pipeline``,
``node`` (the daemon's hook), ``evaluate`` and ``cli``.
"""
