"""The synthesis model: it writes a given text (Graves's attention window on the HM-LSTM core).

model, task (training on IAM-OnDB lines with their texts), evaluate (log-likelihood per line given
its text), generate (writing until the window passes the text), write (the `write` command and its
page layout), styles (priming with a hand), alphabet, and the analyses: letters (where the
boundaries fall on the letters, counted by handwriting_hm/letter_boundaries.py, which the drawings
share), legibility (Tesseract's error rate), toy_font (a proof on a made-up font).
"""
