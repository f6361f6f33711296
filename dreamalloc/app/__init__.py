"""The interactive memory map: a Streamlit web app (``python -m dreamalloc.app``) to play with the placement rules
and learnt agents on a heap (Playground), replay streams and traces step by step (Replay) and read the results of
runs (Results browser). ``engine.py`` computes (no Streamlit), ``charts.py`` draws (Plotly), ``streamlit_app.py``
is the page script, ``__main__.py`` starts the server and ``browser.py`` drives it in a headless Chromium (the
end-to-end test, the screenshots in docs/img/).

May import: every dreamalloc package (it sits above all of them). Nothing in dreamalloc imports it.
"""
