"""People's labels: questions, annotations, adjudication, the assignment queue, flags, agreement."""
