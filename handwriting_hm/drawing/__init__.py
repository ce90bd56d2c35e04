"""Drawing pen sequences, and the boundaries an HM-LSTM found in them, by output: geometry (points,
strokes, coloured pieces, layout, colours and sizes), svg, png, and records (JSON, and the files a
request gives). This file stays import-free, so that reading the colour modes loads no matplotlib."""
