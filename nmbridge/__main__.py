from nmbridge.cli import main

main()
