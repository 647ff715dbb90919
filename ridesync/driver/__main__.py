from ridesync.driver.server import main

main()
