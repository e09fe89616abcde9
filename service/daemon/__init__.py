"""The long-running service: watchers, drain loop, calendar tick, systemd notifications.

``run`` assembles the task group; ``worker`` owns one database session and
drives ``processing`` (event batches and fan-outs) and ``tick`` (the calendar
tick); ``wakers`` turn file-system events, polls and midnights into wake-ups;
``clock`` is the daemon's one clock; ``notify`` speaks sd_notify.
"""
