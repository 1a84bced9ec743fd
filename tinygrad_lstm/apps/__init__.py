"""The applications the command line runs: the adding problem (``demo``) and a character-level LSTM (``charlm``)."""
