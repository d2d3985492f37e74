"""Where samples come from (``raw``, ``synth``, ``download``, ``sources``) and how they are stored
(``shards``, ``embed``); where each dataset's artifacts live is ``t2i.paths``."""
