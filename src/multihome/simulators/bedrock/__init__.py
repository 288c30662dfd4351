"""The AWS Bedrock Runtime simulator (`bedrock` kind): `api.py` routes Converse, ConverseStream and
InvokeModel; `sigv4.py` verifies signatures; `converse.py` translates bodies; `eventstream.py` frames
the binary AWS event stream."""
