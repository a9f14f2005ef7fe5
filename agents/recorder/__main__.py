from agents.runner import main

main("recorder")
