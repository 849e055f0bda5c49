from dpcal.cli import main

main()
