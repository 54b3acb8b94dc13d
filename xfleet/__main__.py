from xfleet.cli import main

main()
