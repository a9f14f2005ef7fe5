from agents.runner import main

main("autoscaler")
