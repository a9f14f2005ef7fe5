from agents.runner import main

main("validator")
