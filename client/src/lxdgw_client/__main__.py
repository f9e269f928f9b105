from lxdgw_client.cli import main

main()
