"""Model access: the litellm client and the scripted model server."""
