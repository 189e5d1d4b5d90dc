"""The retention report: one self-contained HTML page. Its building blocks (``blocks``), the
sections (``sections``, ``campaigns``), the page (``page``) and ``retain report``
(``commands``)."""
