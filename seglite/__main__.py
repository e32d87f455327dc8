from seglite.cli import main

main()
