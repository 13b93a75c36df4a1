"""statsmodels' Holt-Winters on the airline passengers' first 132 months, for
tests/airpassengers.rs: one JSON line per form with its fitted parameters, the in-sample
sum of squared one-step errors and the 12-month forecast."""
import csv
import json
import sys
import warnings

warnings.filterwarnings("ignore")
from statsmodels.tsa.holtwinters import ExponentialSmoothing  # noqa: E402

rows = list(csv.reader(open(sys.argv[1])))[1:]
y = [float(r[-1]) for r in rows][:132]
for seasonal in ("add", "mul"):
    for damped in (False, True):
        m = ExponentialSmoothing(
            y,
            trend="add",
            seasonal=seasonal,
            seasonal_periods=12,
            damped_trend=damped,
            initialization_method="estimated",
        ).fit()
        p = m.params
        print(json.dumps({
            "seasonal": seasonal,
            "damped": damped,
            "alpha": p["smoothing_level"],
            "beta": p["smoothing_trend"],
            "gamma": p["smoothing_seasonal"],
            "sse": m.sse,
            "aicc": m.aicc,
            "forecast": [float(v) for v in m.forecast(12)],
        }))
