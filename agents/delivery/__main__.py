from agents.runner import main

main("delivery")
