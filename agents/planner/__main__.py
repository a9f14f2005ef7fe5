from agents.runner import main

main("planner")
