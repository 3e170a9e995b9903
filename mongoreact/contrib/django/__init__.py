"""Django integration: add ``"mongoreact.contrib.django"`` to ``INSTALLED_APPS``.

Settings: ``MONGOREACT`` (the options of :func:`mongoreact.init`; ``uri`` defaults to
nothing, so set it), ``MONGOREACT_TASK_MODULES`` (modules imported at startup that
register tasks; default: the ``reactive_tasks`` module of every installed app, when it
exists) and ``MONGOREACT_AUTOSTART`` (start workers in ``AppConfig.ready()``; default
false). Web processes usually leave it off and run the workers with
``python manage.py runreactive``.
"""
