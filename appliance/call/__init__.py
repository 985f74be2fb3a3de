"""The call: the OpenAI Realtime protocol (events, names) and the WebRTC connection that carries it."""
