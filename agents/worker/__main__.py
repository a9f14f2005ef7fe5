from agents.runner import main

main("worker")
