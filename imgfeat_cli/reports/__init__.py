"""HTML reports: the floor above ``datasets`` and ``retrieval``, below ``serve`` and ``cli``.

* :mod:`~imgfeat_cli.reports.eval_report`, :mod:`~imgfeat_cli.reports.search_report`,
  :mod:`~imgfeat_cli.reports.check_report`: the ``--report DIR`` of ``eval``, ``search``, ``check``;
* :mod:`~imgfeat_cli.reports.render` and ``templates/``, ``static/``: the one renderer (jinja2);
* :mod:`~imgfeat_cli.reports.matches`: a query and its top-k matches as thumbnails, from plain data,
  for any page (the service's search page);
* :mod:`~imgfeat_cli.reports.target` (the folder, never at a user's files' cost),
  :mod:`~imgfeat_cli.reports.thumbs` (one small JPEG per image) and
  :mod:`~imgfeat_cli.reports.limits` (the caps that bound a report whatever the dataset).
"""
