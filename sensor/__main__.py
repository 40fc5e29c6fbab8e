from sensor.cli import program

program()
