from agents.runner import main

main("guardian")
