from numgate.cli import main

main()
