from agents.runner import main

main("monitor")
