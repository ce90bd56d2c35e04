"""What `handwriting-hm write` and the app's Write view accept (no imports: the command's --help reads it)."""

ALIGNMENTS = ("left", "centre")  # how the lines of a page line up
MAX_CHARACTERS = 300  # the text, newlines aside, as the app's: up to 24,000 steps of the sampler at the cap
