# forward@example.test: pass every message on, unchanged, to sink.
redirect "sink@example.test";
