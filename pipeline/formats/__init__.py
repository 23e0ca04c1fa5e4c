"""Pure renderers: model objects in, bytes out (ALTO, PAGE, METS, text, brat). Which writer
uses which renderer, and under which name, is the table in :mod:`pipeline.writers`."""
