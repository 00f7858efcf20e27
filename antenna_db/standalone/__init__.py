"""DDL and reference rows that build Antenna's tables on a bare database (CI, demo): numbered
SQL files, run in order, each in one transaction, with ``search_path`` = target schema, public."""
